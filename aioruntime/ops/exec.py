"""exec: start another process in a running container (runc's exec), as the caller's child.

An ``Execution`` is that process being started. ``begin()`` checks that the container is
running and starts the process in its namespaces (the compiled intermediate joins them;
see ``spawn.exec_``), and returns the fd to wait on; ``finish()`` reads the process's
report. Any failure, or ``abort()`` (cancellation), kills and reaps the process: nothing
is left half-made.
"""


import os
import signal
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .. import plan as planning
from .. import spawn
from ..cgroups.mounts import hierarchies
from ..cgroups.placement import locate
from ..errors import ConfigError, InvalidStateError
from ..spec import Process
from ..spec.parse import parse_linux, parse_process
from ..state import Store, check_id
from ..status import Status, require
from .console import Console
from .lifecycle import init_pidfd, status_of


class Started(NamedTuple):
    """A process running in the container: the caller waits for it through ``pidfd`` and reaps it."""

    pid: int  # in our pid namespace
    pidfd: int
    terminal: int  # the pty master, if it has a terminal and no console socket took it; else -1


def parse_user(user: str | int) -> tuple[int, int | None]:
    """``uid``, or ``"uid[:gid]"`` in numbers, as ``runc exec -u`` takes it: (uid, gid or None)."""
    if isinstance(user, int) and not isinstance(user, bool):
        uid, gid = str(user), None
    elif isinstance(user, str):
        uid, sep, g = user.partition(":")
        gid = g if sep else None
    else:
        raise ConfigError("process.user", f"expected a uid or 'uid:gid', got {user!r}")
    try:
        return int(uid), int(gid) if gid is not None else None
    except ValueError:
        raise ConfigError("process.user", f"expected numbers as 'uid' or 'uid:gid', got {user!r}") from None


def exec_process(
    config: Mapping[str, Any],
    args: Sequence[str] | None = None,
    *,
    env: Iterable[str] = (),
    cwd: str | None = None,
    user: str | int | None = None,
    additional_gids: Iterable[int] = (),
    capabilities: Iterable[str] = (),
    no_new_privileges: bool | None = None,
    terminal: bool = False,
) -> Process:
    """The process of an exec as runc makes it from the container's config: the config's
    process with ``args`` in place of its own and the options applied (``env`` added, a
    later NAME replacing an earlier one; ``capabilities`` added to the bounding, effective,
    permitted and ambient sets), validated like a config (errors name ``process.*``)."""
    p: dict[str, Any] = dict(config.get("process") or {})  # copied where changed: not ours
    if args is not None:
        p["args"] = list(args)
    if cwd is not None:
        p["cwd"] = cwd
    p["env"] = [*p.get("env", ()), *env]
    u = p["user"] = dict(p.get("user") or {})
    if user is not None:
        uid, gid = parse_user(user)
        u["uid"] = uid
        if gid is not None:
            u["gid"] = gid
    if gids := list(additional_gids):
        u["additionalGids"] = [*u.get("additionalGids", ()), *gids]
    if caps := list(capabilities):
        sets = p["capabilities"] = dict(p.get("capabilities") or {})
        for name in ("bounding", "effective", "permitted", "ambient"):
            sets[name] = [*sets.get(name, ()), *caps]
    if no_new_privileges is not None:
        p["noNewPrivileges"] = no_new_privileges
    p["terminal"] = terminal
    return parse_process(p)


class Execution:
    def __init__(
        self,
        store: Store,
        container_id: str,
        process: Process,
        *,
        stdio: tuple[int, int, int] = (-1, -1, -1),
        preserve_fds: int = 0,
        console_socket: str | None = None,
    ) -> None:
        self.store = store
        self.id = check_id(container_id)
        self.process = process
        self.stdio = stdio
        self.preserve_fds = preserve_fds
        self.console_socket = console_socket
        self.child: spawn.Init | None = None
        self.console: Console | None = None

    def begin(self) -> int:
        """Start the process in the container; return the fd its report arrives on.

        The container's lock is held meanwhile, so that it cannot be deleted under us.
        """
        try:
            self.console = Console(self.process, self.console_socket)
            with self.store.lock(self.id):
                state = self.store.load(self.id)
                require(self.id, "exec", status_of(self.store, state))
                init = init_pidfd(state)
                if init is None:
                    raise InvalidStateError(self.id, "exec", Status.STOPPED.value, (Status.RUNNING.value,))
                try:
                    v2 = {h.mountpoint for h in hierarchies() if h.version == 2}
                    plan = planning.build_exec(
                        self.process,
                        linux=parse_linux(state.config.get("linux") or {}),
                        rootfs=state.rootfs,
                        init_pid=state.pid,
                        cgroup1=[d for mp, d in state.cgroup_paths.items() if mp not in v2],
                        cgroup2=locate(state.cgroup_paths).unified or "",
                        rootless=os.geteuid() != 0,
                        session_keyring=state.session_keyring,
                    )
                    self.child = spawn.exec_(plan, stdio=self.stdio, preserve_fds=self.preserve_fds)
                    # the namespaces were opened by pid: the init still there shows they were its own
                    signal.pidfd_send_signal(init, 0)
                except ProcessLookupError:
                    raise InvalidStateError(self.id, "exec", Status.STOPPED.value, (Status.RUNNING.value,)) from None
                finally:
                    os.close(init)
        except BaseException:
            self.abort()
            raise
        return self.child.sync

    def finish(self) -> Started:
        """Read the process's report (the fd from ``begin()`` is readable): it is about to exec
        the program, or SpawnError says which step failed. The result's fds are the caller's."""
        assert self.child is not None and self.console is not None
        try:
            self.console.receive(self.child)
        except BaseException:
            self.abort()
            raise
        os.close(self.child.sync)
        started = Started(self.child.pid, self.child.pidfd, self.console.master)
        self.child = self.console = None
        return started

    def run(self) -> Started:
        """begin + a blocking wait + finish, for callers without an event loop."""
        self.begin()
        return self.finish()

    def abort(self) -> None:
        """Kill and reap the process, close every fd of it."""
        if self.child is not None:
            spawn.kill(self.child)
            self.child = None
        if self.console is not None:
            self.console.close()
            self.console = None
