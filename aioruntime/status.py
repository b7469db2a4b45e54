"""The container state machine: statuses, which operation each status allows, and the
status a container is in now, read from the kernel the way runc reads it.

    creating -> created -(start)-> running -(exit)-> stopped -(delete)-> gone
                 created, running -(pause)-> pausing -> paused -(resume)-> created, running

Every operation calls ``require`` first, so the rules live here and nowhere else.
"""

from __future__ import annotations

import enum
import os

from .errors import InvalidStateError


class Status(enum.StrEnum):
    CREATING = "creating"
    CREATED = "created"
    RUNNING = "running"
    PAUSING = "pausing"
    PAUSED = "paused"
    STOPPED = "stopped"


class Freezer(enum.StrEnum):
    """The freezer state of a container's cgroup, as cgroup v1 names it."""

    THAWED = "THAWED"
    FREEZING = "FREEZING"
    FROZEN = "FROZEN"


S = Status
ALLOWED: dict[str, frozenset[Status]] = {
    "start": frozenset({S.CREATED}),
    "kill": frozenset({S.CREATED, S.RUNNING, S.PAUSED}),
    # whatever is left in the cgroup, as containerd's shim asks after the init exited
    "kill all": frozenset(Status),
    # runc deletes a created container without --force: nothing of the user's ran yet
    "delete": frozenset({S.CREATED, S.STOPPED, S.CREATING}),
    "force delete": frozenset(Status),
    # as runc: a created container can be paused too (its init is frozen before exec)
    "pause": frozenset({S.CREATED, S.RUNNING}),
    "resume": frozenset({S.PAUSING, S.PAUSED}),
    "exec": frozenset({S.CREATED, S.RUNNING}),  # as runc: the created init waits at its fifo, set up
    "update": frozenset({S.CREATED, S.RUNNING, S.PAUSED}),
    # containerd's shim pauses a container before it checkpoints it, as runc allows
    "checkpoint": frozenset({S.RUNNING, S.PAUSED}),
    "attach to a network": frozenset({S.CREATED, S.RUNNING}),
}


def require(container_id: str, operation: str, current: Status) -> None:
    """Raise InvalidStateError unless ``operation`` is allowed in ``current``."""
    allowed = ALLOWED[operation]
    if current not in allowed:
        raise InvalidStateError(
            container_id, operation, current.value, tuple(s.value for s in Status if s in allowed)
        )


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None when the pid is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def current(pid: int, pid_start: int, fifo_path: str, frozen: Freezer = Freezer.THAWED) -> Status:
    """The status now: init gone -> stopped; frozen -> paused (freezing -> pausing); exec fifo
    there -> created; else running."""
    if pid == 0:
        return Status.CREATING
    if process_start_time(pid) != pid_start:
        return Status.STOPPED
    if frozen is Freezer.FROZEN:
        return Status.PAUSED
    if frozen is Freezer.FREEZING:
        return Status.PAUSING
    if os.path.exists(fifo_path):
        return Status.CREATED
    return Status.RUNNING
