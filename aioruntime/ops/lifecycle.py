"""start, kill, delete, the processes and the OCI state of a container made by any process."""

from __future__ import annotations

import os
import select
import signal
from typing import TYPE_CHECKING, Any

from .. import hooks
from ..cgroups import freezer
from ..cgroups import paths as cgroups
from ..cgroups.placement import locate
from ..errors import AioRuntimeError, ContainerNotFoundError, HookError
from ..state import State, Store
from ..status import Freezer, Status, current, process_start_time, require
from ..waits import Run, Wait, blocking

if TYPE_CHECKING:
    from ..spec import Hook

OCI_VERSION = "1.0.2-dev"


def status_of(store: Store, state: State) -> Status:
    frozen = freezer.state(locate(state.cgroup_paths)) if state.pid else Freezer.THAWED
    return current(state.pid, state.pid_start, store.fifo(state.id), frozen)


def oci_state(store: Store, state: State, status: Status | None = None) -> dict[str, Any]:
    """The OCI state document, in runc's key order (``pid`` is 0 once stopped)."""
    status = status or status_of(store, state)
    out: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "id": state.id,
        "pid": 0 if status is Status.STOPPED else state.pid,
        "status": status.value,
        "bundle": state.bundle,
        "rootfs": state.rootfs,
        "created": state.created,
    }
    if state.annotations:
        out["annotations"] = state.annotations
    out["owner"] = state.owner
    return out


def init_pidfd(state: State) -> int | None:
    """A pidfd on the init if it is still the process we started, else None."""
    try:
        fd = os.pidfd_open(state.pid)
    except ProcessLookupError:
        return None
    if process_start_time(state.pid) != state.pid_start:
        os.close(fd)
        return None
    return fd


def start(store: Store, container_id: str) -> None:
    """``releasing`` driven with poll: for callers without an event loop."""
    blocking(releasing(store, container_id))


def releasing(store: Store, container_id: str) -> Run[None]:
    """Release a created init: it runs its startContainer hooks and execs the user's process;
    then run the poststart hooks here. Done once the process is exec'd and they succeeded.

    A failing startContainer hook ends the init (HookError); a failing poststart hook kills
    the container, as runc does, and is raised.
    """
    with store.lock(container_id):
        state = store.load(container_id)
        require(container_id, "start", status_of(store, state))
        pidfd = init_pidfd(state)
        fifo = os.open(store.fifo(container_id), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if pidfd is None:
                raise AioRuntimeError(f"cannot start container {container_id}: its init has exited")
            # the init is blocked opening the fifo for writing: it writes one byte at once,
            # or it died (pidfd readable). Not yielded: done before a caller's loop can see
            # the process exit, the fifo is gone by then (how events tell it was started)
            poller = select.poll()
            poller.register(fifo, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            poller.poll()
            if not _read_some(fifo):
                raise AioRuntimeError(f"cannot start container {container_id}: its init exited before start")
            os.unlink(store.fifo(container_id))
            # it holds the fifo open until its execve (close-on-exec): its EOF, after the
            # report of what failed in between if anything did
            report = b""
            while (chunk := _read_some(fifo)) != b"":
                if chunk is None:
                    yield Wait((fifo,))
                else:
                    report += chunk
            if report:
                from ..spawn import failure

                raise failure(report)
        finally:
            os.close(fifo)
            if pidfd is not None:
                os.close(pidfd)
    found = _hooks(state, "poststart")
    if found:
        try:
            yield from hooks.run("poststart", found, oci_state(store, state, Status.RUNNING))
        except BaseException:
            kill_now(state)
            raise


def _read_some(fd: int) -> bytes | None:
    """What a non-blocking read gives: data, b"" at EOF, None when nothing is there yet."""
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


def _hooks(state: State, kind: str) -> tuple[Hook, ...]:
    """The container's ``kind`` hooks (poststart, poststop); its config is parsed only when it has some."""
    if not state.config.get("hooks", {}).get(kind):
        return ()
    from ..spec import Spec

    found: tuple[Hook, ...] = getattr(Spec.from_dict(state.config).hooks, kind)
    return found


def kill_now(state: State) -> None:
    """SIGKILL the init and whatever else is in the container's cgroups."""
    pidfd = _kill_all(state)
    if pidfd is not None:
        os.close(pidfd)


def _kill_all(state: State) -> int | None:
    """SIGKILL the init and whatever else is in the container's cgroups; a pidfd on the init
    (to wait for its death) if it was still ours."""
    pidfd = init_pidfd(state) if state.pid else None
    if pidfd is not None:
        try:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
    cgroups.kill_all(state.cgroup_paths)
    _thaw(state)
    return pidfd


def kill(store: Store, container_id: str, sig: int, *, all_processes: bool = False) -> None:
    """Send ``sig`` to the init (through a pidfd: never a recycled pid), or to every process."""
    with store.lock(container_id):
        state = store.load(container_id)
        require(container_id, "kill all" if all_processes else "kill", status_of(store, state))
        if all_processes:
            for pid in cgroups.procs(state.cgroup_paths):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        else:
            pidfd = init_pidfd(state)
            if pidfd is None:
                raise AioRuntimeError("container not running")
            try:
                signal.pidfd_send_signal(pidfd, sig)
            finally:
                os.close(pidfd)
        if sig == signal.SIGKILL:
            _thaw(state)


def _thaw(state: State) -> None:
    """A process frozen by the cgroup v1 freezer does not die of SIGKILL until thawed (as
    runc, thaw after the kill: the signal is pending, so nothing of the user's runs again)."""
    cg = locate(state.cgroup_paths)
    if freezer.state(cg) is not Freezer.THAWED:
        freezer.thaw(cg)


def processes(store: Store, container_id: str) -> list[int]:
    """Host pids of every process in the container's cgroup, as ``runc ps`` lists them."""
    return cgroups.procs(store.load(container_id).cgroup_paths)


def delete_begin(store: Store, container_id: str, *, force: bool = False) -> int | None:
    """Kill what is left of the container; return a pidfd to wait on before ``delete_finish``.

    Without ``force`` only a created (never started) or stopped container is deleted; with
    it a paused one is killed and then thawed, so its processes die.
    """
    with store.lock(container_id):
        try:
            state = store.load(container_id)
        except ContainerNotFoundError:
            return None  # a directory without state: a create that died before writing it
        status = status_of(store, state)
        require(container_id, "force delete" if force else "delete", status)
        if status is Status.STOPPED:
            return None
        return _kill_all(state)


def delete_finish(store: Store, container_id: str) -> State | None:
    """Remove the container's cgroups, network endpoints and state directory (its processes
    are gone); the state it had, for ``poststop``."""
    with store.lock(container_id):
        try:
            state = store.load(container_id)
        except ContainerNotFoundError:
            state = None
        if state is not None:
            cgroups.kill_all(state.cgroup_paths)  # anything that slipped in since delete_begin
            cgroups.remove(state.cgroups_made)
        # networking: its address, veth pair and nft rules; before the state goes, so that
        # a failure here leaves the container for another delete to finish
        from ..network.release import release_container

        release_container(store.root, container_id)
        store.remove(container_id)
    return state


def poststop(store: Store, state: State | None) -> Run[list[HookError]]:
    """The poststop hooks of a deleted container (state: stopped), every one of them: the
    failures are returned, for the caller to warn about; they do not stop the delete."""
    found = _hooks(state, "poststop") if state is not None else ()
    if not found:
        return []
    assert state is not None
    return (yield from hooks.run_all("poststop", found, oci_state(store, state, Status.STOPPED)))


def delete(store: Store, container_id: str, *, force: bool = False) -> list[HookError]:
    """delete_begin, a blocking wait for the init to die, delete_finish, the poststop hooks:
    for callers without an event loop. Returns the poststop hooks that failed."""
    pidfd = delete_begin(store, container_id, force=force)
    if pidfd is not None:
        try:
            select.select([pidfd], [], [])
        finally:
            os.close(pidfd)
    return blocking(poststop(store, delete_finish(store, container_id)))


__all__ = [
    "OCI_VERSION", "delete", "delete_begin", "delete_finish", "init_pidfd", "kill", "kill_now", "oci_state", "poststop",
    "processes", "releasing", "start", "status_of",
]
