"""``process.ioPriority`` and ``process.scheduler``: their names, kernel numbers and checks.

runc's rules (libcontainer/configs/validate), so a bad value fails at load time with its
JSON path rather than as an EINVAL from the init.
"""

from __future__ import annotations

from typing import Any

from aioruntime.errors import ConfigError

from .check import UINT64, Node, integer, list_of, one_of
from .model import IOPriority, Scheduler

#: ioprio_set(2) classes; the value is class << IOPRIO_CLASS_SHIFT | level
IOPRIO_CLASSES: dict[str, int] = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}
IOPRIO_CLASS_SHIFT = 13

SCHED_POLICIES: dict[str, int] = {
    "SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
    "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6,
}
SCHED_FLAGS: dict[str, int] = {
    "SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02, "SCHED_FLAG_DL_OVERRUN": 0x04,
    "SCHED_FLAG_KEEP_POLICY": 0x08, "SCHED_FLAG_KEEP_PARAMS": 0x10,
    "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20, "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40,
}
_REALTIME = ("SCHED_FIFO", "SCHED_RR")

_INT32 = integer(-(2**31), 2**31 - 1)


def io_priority(value: Any, path: str) -> IOPriority:
    n = Node(value, path)
    return IOPriority(
        class_=n.get("class", one_of(IOPRIO_CLASSES, f"one of {', '.join(IOPRIO_CLASSES)}")),
        priority=n.get("priority", integer(0, 7), 0),
    )


def scheduler(value: Any, path: str) -> Scheduler:
    n = Node(value, path)
    s = Scheduler(
        policy=n.get("policy", one_of(SCHED_POLICIES, f"one of {', '.join(SCHED_POLICIES)}")),
        nice=n.get("nice", _INT32, 0),
        priority=n.get("priority", _INT32, 0),
        flags=n.get("flags", list_of(one_of(SCHED_FLAGS, f"one of {', '.join(SCHED_FLAGS)}"), "flags"), ()),
        runtime=n.get("runtime", UINT64, 0),
        deadline=n.get("deadline", UINT64, 0),
        period=n.get("period", UINT64, 0),
    )
    if s.policy == "SCHED_ISO":
        raise ConfigError(n.at("policy"), "SCHED_ISO is reserved: Linux does not implement it")
    if s.policy in ("SCHED_OTHER", "SCHED_BATCH") and not -20 <= s.nice <= 19:
        raise ConfigError(n.at("nice"), f"expected -20 to 19 with {s.policy}, got {s.nice}")
    if s.policy in _REALTIME and not 1 <= s.priority <= 99:
        raise ConfigError(n.at("priority"), f"expected 1 to 99 with {s.policy}, got {s.priority}")
    if s.policy not in _REALTIME and s.priority:
        raise ConfigError(n.at("priority"), "a priority is only for SCHED_FIFO and SCHED_RR")
    if s.policy != "SCHED_DEADLINE" and (s.runtime or s.deadline or s.period):
        raise ConfigError(path, "runtime, deadline and period are only for SCHED_DEADLINE")
    if s.policy == "SCHED_DEADLINE" and not 1024 <= s.runtime <= s.deadline <= (s.period or s.deadline):
        raise ConfigError(path, "SCHED_DEADLINE needs 1024 <= runtime <= deadline <= period (ns; period 0 is the deadline)")
    return s
