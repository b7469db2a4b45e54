"""create: from a bundle to an init blocked on its exec fifo, or to nothing at all.

A ``Creation`` is a container being made. ``begin()`` does the work up to the point where
the init reports back and returns the fd to wait on; ``runtime_hooks()`` runs the prestart
and createRuntime hooks when the init reaches its hooks point (a ``waits.Run`` to drive);
``finish()`` reads the report. Any
failure, or ``abort()`` (cancellation), removes every trace: the init, its cgroups, the
fifo and the state directory. With ``process.terminal`` the init reports with the pty
master, which goes to the console socket if one is given, else stays ours (``console``).
"""

from __future__ import annotations

import os
import time
from typing import Any

from .. import hooks
from .. import plan as planning
from .. import spawn
from ..cgroups import paths as cgroups
from ..cgroups.mounts import hierarchies
from ..cgroups.placement import locate
from ..cgroups.resources import apply_config
from ..errors import CgroupError
from ..spec import Spec, load
from ..state import State, Store, check_id
from ..status import Status, process_start_time
from ..waits import Run, Wait, blocking
from .console import Console
from .lifecycle import oci_state


def now_rfc3339() -> str:
    """UTC with nanoseconds, trailing zeros dropped: Go's RFC3339Nano, as runc writes ``created``."""
    ns = time.time_ns()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
    fraction = f"{ns % 1_000_000_000:09d}".rstrip("0")
    return f"{stamp}.{fraction}Z" if fraction else f"{stamp}Z"


def cgroup_mounts(paths: dict[str, str]) -> list[planning.CgroupMount]:
    """How the container's /sys/fs/cgroup shows each hierarchy it is in."""
    out = []
    for h in hierarchies():
        if h.mountpoint in paths:
            fstype = "cgroup2" if h.version == 2 else "cgroup"
            out.append(planning.CgroupMount(h.name, paths[h.mountpoint], fstype, ",".join(h.controllers)))
    return out


class Creation:
    def __init__(
        self,
        store: Store,
        container_id: str,
        bundle: str | os.PathLike[str],
        *,
        stdio: tuple[int, int, int] = (-1, -1, -1),
        no_pivot: bool = False,
        preserve_fds: int = 0,
        spec: Spec | None = None,
        console_socket: str | None = None,
        no_new_keyring: bool = False,
    ) -> None:
        """``no_new_keyring``: the init keeps the caller's session keyring instead of joining
        a new one of its own (runc's ``--no-new-keyring``)."""
        self.store = store
        self.id = check_id(container_id)
        self.session_keyring = "" if no_new_keyring else f"_ses.{self.id}"  # runc's name
        self.bundle = os.path.abspath(os.fspath(bundle))
        self.stdio = stdio
        self.no_pivot = no_pivot
        self.preserve_fds = preserve_fds
        self.spec = spec
        self.console_socket = console_socket
        self.state: State | None = None
        self.init: spawn.Init | None = None
        self.console: Console | None = None
        self._dir_fd = -1
        self._hook_state: dict[str, Any] = {}

    def begin(self) -> int:
        """Validate, reserve the id, make and limit the cgroups, spawn the init; return the fd to wait on."""
        spec = self.spec or load(self.bundle)
        self.spec = spec
        paths = cgroups.resolve(spec.linux.cgroups_path, self.id)
        rootless = os.geteuid() != 0
        state = State(
            id=self.id,
            bundle=self.bundle,
            rootfs=planning.rootfs_of(spec, self.bundle),
            created=now_rfc3339(),
            config=spec.to_dict(),
            cgroup_paths=paths,
            annotations=dict(spec.annotations),
            session_keyring=self.session_keyring,
        )
        self._hook_state = oci_state(self.store, state, Status.CREATING)
        plan = planning.build(
            spec, bundle=self.bundle, cgroups=cgroup_mounts(paths), no_pivot=self.no_pivot, rootless=rootless,
            session_keyring=self.session_keyring, hook_state=self._hook_state,
        )
        assert spec.process is not None  # build() checked
        self.console = Console(spec.process, self.console_socket)
        try:
            self._dir_fd = self.store.reserve(self.id)
            os.mkfifo(self.store.fifo(self.id))
            os.chmod(self.store.fifo(self.id), 0o622)  # past the umask: a non-root init opens it
            self.state = state
            if rootless:
                plan = self._rootless_cgroups(spec, plan)
                apply_config(spec, self.state.cgroup_paths, rootless=True)
            else:
                self.state = self.state._replace(cgroups_made=tuple(cgroups.create(paths)))
                apply_config(spec, paths)
            self.store.save(self.state)  # from here a crash leaves a "creating" entry delete -f cleans
            # born in its cgroup2 cgroup; at go it joins the v1 ones (see plan.WaitGoStep)
            self.init = spawn.spawn(
                plan, stdio=self.stdio, state_dir_fd=self._dir_fd, preserve_fds=self.preserve_fds,
                cgroup2=locate(self.state.cgroup_paths).unified or "",
            )
            if plan.clone_flags & planning.CLONE_NEWUSER:
                spawn.write_id_maps(self.init, spec.linux.uid_mappings, spec.linux.gid_mappings, deny_setgroups=rootless)
            spawn.go(self.init, plan)
        except BaseException:
            self.abort()
            raise
        return self.init.sync

    def _rootless_cgroups(self, spec: Spec, plan: planning.Plan) -> planning.Plan:
        """An unprivileged runtime uses its cgroups where it may make them (a delegated
        subtree), and goes without them, as runc does, where it may not."""
        assert self.state is not None
        try:
            made = tuple(cgroups.create(self.state.cgroup_paths))
        except CgroupError:
            self.state = self.state._replace(cgroup_paths={})
            return planning.build(spec, bundle=self.bundle, no_pivot=self.no_pivot, rootless=True,
                                  session_keyring=self.session_keyring, hook_state=self._hook_state)
        self.state = self.state._replace(cgroups_made=made)
        return plan

    def runtime_hooks(self) -> Run[None]:
        """Between ``begin()`` and ``finish()``: if the config has prestart or createRuntime
        hooks, wait for the init at its hooks point, run them here (in our namespaces, with
        the init's pid) and let the init go on. A failure is raised (HookError); the caller
        aborts. createRuntime gets status "creating" (runc); prestart, deprecated and once
        defined as run at start, "created" (crun, and the runtime-tools validation suite)."""
        assert self.init is not None and self.spec is not None
        found = self.spec.hooks
        if not (found.prestart or found.create_runtime):
            return
        yield Wait((self.init.sync,))
        spawn.read_hooks_point(self.init)
        state = {**self._hook_state, "pid": self.init.pid}
        yield from hooks.run("prestart", found.prestart, {**state, "status": Status.CREATED.value})
        yield from hooks.run("createRuntime", found.create_runtime, state)
        spawn.resume(self.init)

    def finish(self) -> State:
        """Read the init's report (the fd from ``begin()`` is readable); save the created state.

        With a terminal and no console socket, ``console.master`` is then the caller's to close."""
        assert self.init is not None and self.state is not None and self.console is not None
        try:
            self.console.receive(self.init)
            self.state = self.state._replace(
                pid=self.init.pid, pid_start=process_start_time(self.init.pid) or 0
            )
            self.store.save(self.state)
        except BaseException:
            self.abort()
            raise
        os.close(self.init.sync)
        os.close(self._dir_fd)
        self._dir_fd = -1
        return self.state

    @property
    def pidfd(self) -> int:
        """The pidfd on the init (our child): the caller reaps through it and closes it."""
        assert self.init is not None
        return self.init.pidfd

    def run(self) -> State:
        """begin + the runtime hooks + a blocking wait + finish, for callers without an event loop."""
        self.begin()
        try:
            blocking(self.runtime_hooks())
        except BaseException:
            self.abort()
            raise
        return self.finish()

    def abort(self) -> None:
        """Undo everything: kill and reap the init, remove cgroups, fifo and state directory."""
        if self.init is not None:
            spawn.kill(self.init)
            self.init = None
        if self.console is not None:
            self.console.close()
        if self.state is not None:
            cgroups.remove(self.state.cgroups_made)
            self.state = None
        if self._dir_fd >= 0:
            os.close(self._dir_fd)
            self._dir_fd = -1
            self.store.remove(self.id)
