"""The asyncio face of aioruntime: ``await Container(id, bundle).run()``.

The operations themselves are the synchronous ones in ``ops``; here they are sequenced
on the event loop, and every wait (the init's report, its exit, its death on delete, a
freeze, an OOM) is an fd watched by the loop: no threads, no polling, no SIGCHLD handler.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, TypeVar

from .ops.create import Creation
from .cgroups.placement import locate
from .cgroups.stats import StatsReader
from .errors import ContainerExistsError, ContainerNotFoundError
from .events import Event, Hub
from .ops import freeze, lifecycle
from .ops import update as updating
from .spec import Spec, load
from .spec.resources import Resources
from .state import DEFAULT_ROOT, State, Store, check_id
from .stats import Stats
from .status import Status, require

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL

if TYPE_CHECKING:
    from .criu.swrk import Wait
    from .network import Endpoint, Network, PortMapping
    from .network.nat import Ports

Stdio = int | IO[Any] | None
T = TypeVar("T")


async def _readable(fd: int) -> None:
    """Wait until ``fd`` is readable, on the running loop."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _driven(wait: Wait[T]) -> T:
    """Run a core operation that yields the fds it waits on (CRIU's socket, its pidfd) on
    the loop; cancelled, the operation is closed and undoes what it started."""
    try:
        fd = next(wait)
        while True:
            await _readable(fd)
            fd = wait.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    finally:
        wait.close()


def _returncode(pidfd: int, block: bool) -> int | None:
    """Reap our child through its pidfd: the exit code, or minus the signal that killed it."""
    info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | (0 if block else os.WNOHANG))
    if info is None:
        return None
    return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status


class Container:
    """One container under ``root``: made by this object, or found there with ``load``.

    stdin, stdout and stderr take what ``asyncio.create_subprocess_exec`` takes: None to
    inherit ours, a file descriptor or file, ``DEVNULL`` or ``PIPE`` (then ``stdin`` is a
    ``StreamWriter`` and ``stdout``/``stderr`` are ``StreamReader``\\ s once created).

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
        network: Network | None = None,
        ports: Ports | None = None,
        nat: bool = False,
    ) -> None:
        self.id = check_id(id)
        self.bundle = os.fspath(bundle) if bundle is not None else None
        self._store = Store(root)
        self._stdio = (stdin, stdout, stderr)
        self._no_pivot = no_pivot
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._state: State | None = None
        self._spec: Spec | None = None
        self._pidfd: int | None = None  # set while our child init is unreaped
        self._exit: asyncio.Future[int] | None = None
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
        return self._exit.result() if self._exit is not None and self._exit.done() else None

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
        spec = None
        if self._join is not None:  # networking: refuse a container without a netns of its own now
            from .network.network import check_netns

            spec = load(self.bundle)
            check_netns(spec, self.id)
        child_fds, parent_fds, close_after = self._open_stdio()
        creation = Creation(self._store, self.id, self.bundle, stdio=child_fds, no_pivot=self._no_pivot, spec=spec)
        try:
            fd = creation.begin()
            for f in close_after:
                os.close(f)
            close_after = []
            await _readable(fd)
            self._state = creation.finish()
        except BaseException:
            creation.abort()
            for f in close_after + [f for f in parent_fds if f is not None]:
                os.close(f)
            if self._hub is not None:
                self._hub.end()
                self._hub = None
            raise
        self._spec = creation.spec
        self._watch_exit(creation.pidfd)
        if self._hub is not None:
            self._hub.created()
        try:
            if self._join is not None:  # networking, before stdio: its streams would outlive a failure
                network, ports, nat = self._join
                try:
                    await self.attach(network, ports=ports, nat=nat)
                except BaseException:
                    for ours in parent_fds:
                        if ours is not None:
                            os.close(ours)
                    raise
            await self._connect_stdio(parent_fds)
        except BaseException:
            self._delete_now()  # releases the network too
            raise

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
        """Release the init: it execs the configured process."""
        lifecycle.start(self._store, self.id)
        if self._hub is not None:
            self._hub.refresh()

    async def wait(self) -> int | None:
        """Wait for the init to exit; its status if this process created it, else None."""
        if self._exit is not None:
            return await asyncio.shield(self._exit)
        state = self._load()
        try:
            pidfd = os.pidfd_open(state.pid)
        except ProcessLookupError:
            return None
        try:
            if lifecycle.status_of(self._store, state) is not Status.STOPPED:
                await _readable(pidfd)
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
                await _readable(pidfd)
            if self._exit is not None:
                await asyncio.shield(self._exit)
            await self._leave_network()
        except BaseException:
            self._delete_now()
            raise
        finally:
            if pidfd is not None:
                os.close(pidfd)
        lifecycle.delete_finish(self._store, self.id)
        self._state = None
        if self._hub is not None:
            self._hub.deleted()
            self._hub = None  # a container made again under this id has a new life to listen to

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
        if await _driven(checkpoint(self._store, self.id, options, criu=criu)):
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
        child_fds, parent_fds, close_after = c._open_stdio()
        try:
            restored = await _driven(restore(c._store, c.id, bundle, options, stdio=child_fds, criu=criu))
        except BaseException:
            for f in [f for f in parent_fds if f is not None]:
                os.close(f)
            raise
        finally:
            for f in close_after:
                os.close(f)
        c._state = restored.state
        c._watch_exit(restored.pidfd)
        try:
            await c._connect_stdio(parent_fds)
        except BaseException:
            c._delete_now()
            raise
        return c

    def _delete_now(self) -> None:
        """Force-delete without the loop: for cancellation, where awaiting is no longer possible."""
        lifecycle.delete(self._store, self.id, force=True)
        self._state = None
        if self._pidfd is not None:
            code = _returncode(self._pidfd, block=True)
            self._reaped(code if code is not None else -signal.SIGKILL)
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
                    await _readable(f.fd)
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
            self._hub = Hub(self._store, self.id, lambda: self._pidfd is not None)
        hub = self._hub
        queue = hub.subscribe()
        try:
            while (event := await queue.get()) is not None:
                yield event
        finally:
            hub.unsubscribe(queue)

    # -- exit and stdio --------------------------------------------------------------------

    def _watch_exit(self, pidfd: int) -> None:
        loop = asyncio.get_running_loop()
        self._pidfd = pidfd
        self._exit = loop.create_future()

        def on_readable() -> None:
            code = _returncode(pidfd, block=False)
            if code is not None:
                self._reaped(code)

        loop.add_reader(pidfd, on_readable)

    def _reaped(self, code: int) -> None:
        assert self._pidfd is not None and self._exit is not None
        asyncio.get_running_loop().remove_reader(self._pidfd)
        os.close(self._pidfd)
        self._pidfd = None
        if not self._exit.done():
            self._exit.set_result(code)
        if self._hub is not None:
            self._hub.exited(code)

    def _open_stdio(self) -> tuple[tuple[int, int, int], builtins.list[int | None], builtins.list[int]]:
        """(fds for the child, our ends of PIPEs, fds to close once the child has its copies)."""
        child: builtins.list[int] = []
        ours: builtins.list[int | None] = []
        close_after: builtins.list[int] = []
        try:
            for i, spec in enumerate(self._stdio):
                if spec is None:
                    child.append(-1)
                    ours.append(None)
                elif spec == PIPE:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    child.append(r if i == 0 else w)
                    ours.append(w if i == 0 else r)
                    close_after.append(child[-1])
                elif spec == DEVNULL:
                    fd = os.open(os.devnull, (os.O_RDONLY if i == 0 else os.O_WRONLY) | os.O_CLOEXEC)
                    child.append(fd)
                    ours.append(None)
                    close_after.append(fd)
                else:
                    child.append(spec if isinstance(spec, int) else spec.fileno())
                    ours.append(None)
        except BaseException:
            for f in close_after + [f for f in ours if f is not None]:
                os.close(f)
            raise
        return (child[0], child[1], child[2]), ours, close_after

    async def _connect_stdio(self, fds: builtins.list[int | None]) -> None:
        """Wrap our PIPE ends in streams; on failure or cancellation close every one."""
        loop = asyncio.get_running_loop()
        files = [os.fdopen(fd, "wb" if i == 0 else "rb", 0) if fd is not None else None for i, fd in enumerate(fds)]
        transports: builtins.list[asyncio.BaseTransport] = []
        try:
            if files[0] is not None:
                writer, protocol = await loop.connect_write_pipe(_protocol(asyncio.StreamReader()), files[0])
                transports.append(writer)
                self.stdin = asyncio.StreamWriter(writer, protocol, None, loop)
            readers: builtins.list[asyncio.StreamReader | None] = []
            for f in files[1:]:
                reader = None
                if f is not None:
                    reader = asyncio.StreamReader()
                    transport, _ = await loop.connect_read_pipe(_protocol(reader), f)
                    transports.append(transport)
                readers.append(reader)
            self.stdout, self.stderr = readers
        except BaseException:
            for t in transports:
                t.close()
            for f in files:
                if f is not None:
                    f.close()
            self.stdin = None
            raise


def _protocol(reader: asyncio.StreamReader) -> Callable[[], asyncio.StreamReaderProtocol]:
    return lambda: asyncio.StreamReaderProtocol(reader)
