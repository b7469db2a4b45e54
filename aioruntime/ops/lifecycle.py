"""start, kill, delete, the processes and the OCI state of a container made by any process."""

from __future__ import annotations

import os
import select
import signal
from typing import Any

from ..cgroups import freezer
from ..cgroups import paths as cgroups
from ..cgroups.placement import locate
from ..errors import AioRuntimeError, ContainerNotFoundError
from ..state import State, Store
from ..status import Freezer, Status, current, process_start_time, require

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
    """Release a created init: it execs the user's process. Returns once the init has read the go."""
    with store.lock(container_id):
        state = store.load(container_id)
        require(container_id, "start", status_of(store, state))
        pidfd = init_pidfd(state)
        fifo = os.open(store.fifo(container_id), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            if pidfd is None:
                raise AioRuntimeError(f"cannot start container {container_id}: its init has exited")
            # the init is blocked opening the fifo for writing: it writes one byte and execs,
            # or it died (pidfd readable): either ends this poll
            poller = select.poll()
            poller.register(fifo, select.POLLIN)
            poller.register(pidfd, select.POLLIN)
            poller.poll()
            try:
                data = os.read(fifo, 1)
            except BlockingIOError:
                data = b""
            if not data:
                raise AioRuntimeError(f"cannot start container {container_id}: its init exited before start")
            os.unlink(store.fifo(container_id))
        finally:
            os.close(fifo)
            if pidfd is not None:
                os.close(pidfd)


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
        pidfd = init_pidfd(state) if state.pid else None
        if pidfd is not None:
            try:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        cgroups.kill_all(state.cgroup_paths)
        _thaw(state)
        return pidfd


def delete_finish(store: Store, container_id: str) -> None:
    """Remove the container's cgroups, network endpoints and state directory (its processes are gone)."""
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


def delete(store: Store, container_id: str, *, force: bool = False) -> None:
    """delete_begin, a blocking wait for the init to die, delete_finish: for the CLI."""
    pidfd = delete_begin(store, container_id, force=force)
    if pidfd is not None:
        try:
            select.select([pidfd], [], [])
        finally:
            os.close(pidfd)
    delete_finish(store, container_id)


__all__ = [
    "OCI_VERSION", "delete", "delete_begin", "delete_finish", "init_pidfd", "kill", "oci_state", "processes", "start",
    "status_of",
]
