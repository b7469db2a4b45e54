"""What happens to a container, as typed events pushed to any number of subscribers.

Every event comes from a kernel notification on a file descriptor the event loop watches:
the init's pidfd (exit), the OOM eventfd (cgroup v1) or inotify on memory.events (v2),
and inotify on the container's state directory, which the operations of any process
change (start removes exec.fifo, pause and resume touch it, delete removes it). On each
notification the status is read again and its change is published, so an event is never
made up from a timer. Each subscriber has its own unbounded queue: a slow one delays
nobody and loses nothing.
"""


import asyncio
import os
import time
from collections.abc import Callable
from typing import NamedTuple

from .cgroups.notify import IN_ATTRIB, IN_DELETE, IN_DELETE_SELF, IN_IGNORED, IN_MOVED_TO, Inotify, OomWatch
from .cgroups.placement import locate
from .errors import ContainerNotFoundError
from .ops import lifecycle
from .state import State, Store
from .status import Status, process_start_time


class Created(NamedTuple):
    id: str
    time: float


class Started(NamedTuple):
    id: str
    time: float


class Paused(NamedTuple):
    id: str
    time: float


class Resumed(NamedTuple):
    id: str
    time: float


class OOM(NamedTuple):
    """The container's memory cgroup ran out of memory (one event per time)."""

    id: str
    time: float


class Exited(NamedTuple):
    """The init exited: ``status`` is its exit code (minus the signal that killed it) when
    this process is its parent, else None."""

    id: str
    time: float
    status: int | None


class Deleted(NamedTuple):
    id: str
    time: float


Event = Created | Started | Paused | Resumed | OOM | Exited | Deleted

_CHANGES: dict[tuple[Status, Status], Callable[[str, float], Event]] = {
    (Status.CREATING, Status.CREATED): Created,
    (Status.CREATED, Status.RUNNING): Started,
    (Status.CREATED, Status.PAUSED): Paused,
    (Status.RUNNING, Status.PAUSED): Paused,
    (Status.PAUSED, Status.RUNNING): Resumed,
    (Status.PAUSED, Status.CREATED): Resumed,
}


class Hub:
    """The event source of one container in this process.

    Watches are opened when the first subscriber arrives (or, subscribed before ``create``,
    when the container exists) and all closed when the last leaves. ``own_exit`` says the
    ``Container`` reaps the init itself and reports its exit through ``exited`` (the loop
    allows one reader per fd, and the pidfd is its).
    """

    def __init__(self, store: Store, container_id: str, own_exit: Callable[[], bool]) -> None:
        self.store = store
        self.id = container_id
        self._own_exit = own_exit
        self._queues: list[asyncio.Queue[Event | None]] = []
        self._fds: list[int] = []
        self._closers: list[Callable[[], None]] = []
        self._watching_dir = False
        self._watching_process = False
        self._last: Status | None = None
        self._exited = False
        self._ended = False

    # -- subscribers -------------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[Event | None]:
        q: asyncio.Queue[Event | None] = asyncio.Queue()
        if self._ended:
            q.put_nowait(None)
            return q
        self._queues.append(q)
        self.watch()
        return q

    def unsubscribe(self, q: asyncio.Queue[Event | None]) -> None:
        if q in self._queues:
            self._queues.remove(q)
        if not self._queues:
            self.unwatch()

    def publish(self, event: Event) -> None:
        for q in self._queues:
            q.put_nowait(event)

    # -- what the Container reports, and what the watches see ---------------------------------

    def created(self) -> None:
        if self._queues and self._last in (None, Status.CREATING):
            self.publish(Created(self.id, time.time()))
            self._last = Status.CREATED
        self.watch()

    def refresh(self) -> None:
        """Read the status again and publish what changed since the last look."""
        if not self._queues or self._ended:
            return
        try:
            state = self.store.load(self.id)
        except ContainerNotFoundError:
            return  # being created (no state yet) or deleted (the directory watch says so)
        if state.pid and not self._watching_process:
            self._watch_process(state)
        status = lifecycle.status_of(self.store, state)
        if status is Status.PAUSING:
            return  # not frozen yet: Paused follows when it is
        change = _CHANGES.get((self._last, status)) if self._last else None
        if change is not None:
            self.publish(change(self.id, time.time()))
        if status is not Status.STOPPED:
            self._last = status

    def exited(self, status: int | None) -> None:
        if not self._queues or self._exited:
            return
        self._exited = True
        if self._last is Status.CREATED and not os.path.exists(self.store.fifo(self.id)):
            self.publish(Started(self.id, time.time()))  # started and gone before we looked
        self.publish(Exited(self.id, time.time(), status))

    def deleted(self) -> None:
        if self._ended:
            return
        if not self._exited and self._last not in (None, Status.CREATING, Status.CREATED):
            self.exited(None)
        self.publish(Deleted(self.id, time.time()))
        self.end()

    def end(self) -> None:
        """End every subscriber's stream (after Deleted, or a create that failed)."""
        self._ended = True
        for q in self._queues:
            q.put_nowait(None)
        self.unwatch()

    # -- watches --------------------------------------------------------------------------------

    def watch(self) -> None:
        """Watch the state directory (once it exists), then look at the status."""
        if self._ended or not self._queues:
            return
        if not self._watching_dir:
            directory = Inotify()
            try:
                directory.watch(self.store.dir(self.id), IN_ATTRIB | IN_DELETE | IN_DELETE_SELF | IN_MOVED_TO)
            except FileNotFoundError:
                directory.close()
                return  # not created yet: created() comes back here
            self._add(directory.fd, directory.close, lambda: self._on_directory(directory))
            self._watching_dir = True
        self.refresh()

    def _watch_process(self, state: State) -> None:
        """The OOM notifications of its memory cgroup and, unless the Container reaps the
        init, a pidfd on it."""
        self._watching_process = True
        cg = locate(state.cgroup_paths)
        if "memory" in cg.dirs:
            oom = OomWatch(cg)
            self._add(oom.fd, oom.close, lambda: self._on_oom(oom))
        if not self._own_exit():
            pidfd = _pidfd(state.pid, state.pid_start)
            if pidfd is not None:
                self._add(pidfd, lambda: os.close(pidfd), lambda: self._on_exit(pidfd))
            elif not self._exited:
                self._last = None  # gone before we looked: no Exited to report

    def _add(self, fd: int, close: Callable[[], None], ready: Callable[[], None]) -> None:
        self._closers.append(close)
        asyncio.get_running_loop().add_reader(fd, ready)
        self._fds.append(fd)

    def unwatch(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._fds:
            loop.remove_reader(fd)
        for close in self._closers:
            close()
        self._fds.clear()
        self._closers.clear()
        self._watching_dir = self._watching_process = False

    def _on_directory(self, directory: Inotify) -> None:
        events = directory.read()
        if any(mask & (IN_DELETE_SELF | IN_IGNORED) for _, mask, _ in events):
            self.deleted()
        else:
            self.refresh()

    def _on_oom(self, oom: OomWatch) -> None:
        for _ in range(oom.read()):
            self.publish(OOM(self.id, time.time()))
        if oom.gone:
            asyncio.get_running_loop().remove_reader(oom.fd)

    def _on_exit(self, pidfd: int) -> None:
        asyncio.get_running_loop().remove_reader(pidfd)
        self.exited(None)


def _pidfd(pid: int, start: int) -> int | None:
    """A pidfd on the init if it is still the process the state names."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    if process_start_time(pid) != start:
        os.close(fd)
        return None
    return fd


__all__ = ["OOM", "Created", "Deleted", "Event", "Exited", "Hub", "Paused", "Resumed", "Started"]
